"""What happens to labeled events between the HTTP edge and the stream: the per-source rate
limit and the join of late labels with their stored predictions. No FastAPI here."""
