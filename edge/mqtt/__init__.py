"""MQTT: events to the central VMS (store and forward), commands from it, the control-room monitor."""
