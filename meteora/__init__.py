"""meteora."""
