"""Input and output of media and result files; no pose code lives here."""
