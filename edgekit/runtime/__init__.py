"""Run exported models through one API: ``edgekit.load(path) -> EdgeModel``."""
