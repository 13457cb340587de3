"""``cdb dead-letter``: inspect and replay what the bus gave up on."""
