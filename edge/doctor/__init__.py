"""`fall-edge doctor`: what an installer checks on site, in one table."""
