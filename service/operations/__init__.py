"""The operator's controls over what `/predict` serves: versions, promotion and rollback."""
