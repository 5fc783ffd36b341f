"""The app as NiceGUI's test fixtures start it (settings from the environment the
fixtures set up)."""

from kairos_ui.app import main

main()
