"""Parts shared by every method: safe checkpoint loading, state-dict inspection, tiling."""
