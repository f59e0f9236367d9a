"""``edgebench.dashboards``: the Grafana dashboards as code (grafanalib), every query InfluxQL.

``build.render(name)`` gives one dashboard's JSON, ``build.build(dir)`` writes them all (the committed copies are in
``dashboards/json/``), ``push.push_dashboard`` uploads one through Grafana's HTTP API, ``queries`` extracts and
interpolates their InfluxQL. The CLI is ``edgebench dashboards build | push | queries`` (``commands.py``).
See docs/dashboards.md.
"""
