"""Evidence: the sealed audit chain, its checkpoints, verify, export, archive and feedback."""
