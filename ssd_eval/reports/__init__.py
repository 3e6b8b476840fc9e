"""Layer 5: what is made from finished results: table, gate, baselines, pictures, tracking."""
