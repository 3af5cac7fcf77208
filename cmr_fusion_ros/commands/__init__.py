"""Sub-commands of `cmr-fusion`: thin argument parsing over tested library functions."""
