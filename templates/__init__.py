"""Report templates and print CSS (a package so installs ship them)."""
