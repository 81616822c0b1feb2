"""`radretrieve serve`: a search service over one out dir, and a page to look at results in a browser.

Modules (import the one you need; this file imports nothing, so the CLI can check its arguments fast):

* `config`     `ServeConfig`, the bind rule (loopback unless a token file is given), reading the token;
* `service`    `WebService`: the search service, batched text encoder, items, thumbnails, loaded once;
* `batching`   `TextBatcher`: concurrent text queries share one encoder call;
* `api`        the JSON routes under /api;
* `auth`       the token check (bearer header or login cookie) and the login form;
* `middleware` the request log (method, route, status: no query strings), error guard, security headers;
* `page`       the static pages in `static/` and their Content-Security-Policy;
* `app`        `create_app`, the uvicorn factory, `serve`.
"""
