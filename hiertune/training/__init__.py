"""One trial's training: the loop, its checkpoint directory, losses, device, faults, and the in-process run."""
