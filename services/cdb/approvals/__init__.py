"""The owner's answers to held orders from the command line (``cdb approvals|approve|veto``)."""
