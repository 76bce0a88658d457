"""Stream flows (faust agents): thin, decode -> domain -> ports."""
