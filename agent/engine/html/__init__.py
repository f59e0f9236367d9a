"""One bench report as one self-contained HTML page (``edgebench report R.json --html``, ``bench --html``).

``page.py`` turns the report into charts and their tables; the chart library (Observable Plot on d3) is vendored
in ``vendor/`` and inlined into every page, so a page opens offline from file:// and fetches nothing."""
