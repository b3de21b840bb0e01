"""The dashboard: what the app did and is doing, on one HTML page (`GET /api/dashboard`).

`view` reads the ledger, the backend, the rejected inputs and the poison queues into a `Dashboard`;
`page` renders it as one self-contained HTML page (inline CSS, script and SVG charts from `charts`),
every value escaped; `shared.pricing` turns endpoints into money.
"""
