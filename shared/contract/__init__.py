"""The event and queue-message contract: what the edge sends and the writer reads, and the ids
they carry. One encoder and one decoder of the queue message live here."""
