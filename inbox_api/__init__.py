"""The inbox: consumers page through their account's undelivered events and acknowledge them."""
