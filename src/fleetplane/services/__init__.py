"""Use cases over the store: keyword-only functions; every mutation writes its audit row here."""
