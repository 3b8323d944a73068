"""The built-in demo: synthetic faces, a small CNN trained on the CPU, and its audit."""
