"""Stage 4, judging: trust scores for the maps, one Holm correction, accuracy, findings, recommended
fine-tuning data, the plan's checks, and the comparison of several models."""
