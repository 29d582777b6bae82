"""Domain services, one module per stage of the data path; no HTTP here."""
