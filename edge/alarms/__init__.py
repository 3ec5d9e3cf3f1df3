"""Local alarms at the site: the buzzer and the spoken warning."""
