"""The app as NiceGUI's test fixtures start it (settings from the environment the
fixtures set up; the port is the fixtures' own, so `main`'s checks are skipped)."""

from kairos_ui.app import serve
from kairos_ui.settings import UiSettings

serve(UiSettings.from_env())
