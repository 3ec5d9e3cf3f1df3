"""Event clips: the seconds around a fall or an intrusion, drawn, encoded, stored and sent."""
