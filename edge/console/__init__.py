"""The control room in a browser (`fall-edge console`): every device's status and health, open
alarms with their pictures, acknowledge and test buttons, the event history; live updates by
server-sent events. Flask, served by waitress; runs on a server next to the broker (3.8+)."""
