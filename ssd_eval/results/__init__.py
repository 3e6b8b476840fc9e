"""Layer 3: what a run leaves behind and how finished results are read, compared and paired."""
