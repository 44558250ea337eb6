"""Entry point of one writer process: clients, signals, run until told to stop."""

from __future__ import annotations

import asyncio
import signal

import uvloop

from shared.aws.clients import open_clients
from shared.observability import metrics
from shared.observability.logging import configure_logging
from shared.runtime import tune_gc
from shared.settings import Settings
from writer_worker.consumer_view import ConsumerViews
from writer_worker.processor import BatchProcessor
from writer_worker.store import EventWriter
from writer_worker.worker import QueueUrls, Worker


async def run_writer(settings: Settings) -> None:
    async with open_clients(settings) as clients:
        urls = QueueUrls(
            events=(await clients.sqs.admin.get_queue_url(QueueName=settings.events_queue))["QueueUrl"],
            dead_letters=(await clients.sqs.admin.get_queue_url(QueueName=settings.dead_letter_queue))["QueueUrl"],
        )
        writer = EventWriter(clients.dynamodb, settings, views=ConsumerViews(clients.dynamodb, settings))
        worker = Worker(
            clients.sqs,
            urls,
            BatchProcessor(writer),
            receivers=settings.writer_receivers,
            wait_time_s=settings.writer_wait_time_s,
            shutdown_grace_s=settings.writer_shutdown_grace_s,
            visibility_timeout_s=settings.queue_visibility_timeout_s,
            probe=writer.probe,
        )
        tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()


def main(settings: Settings) -> None:
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    uvloop.run(run_writer(settings))
