"""`radretrieve serve`: a search service over one out dir, and a page to look at results in a browser.

Modules (import the one you need; this file imports nothing, so the CLI can check its arguments fast):

* `config`     `ServeConfig`, the bind rule (loopback unless a token file is given), reading the token;
* `service`    `WebService`: the search service, batched text encoder, items, thumbnails, loaded once;
* `batching`   `TextBatcher`: concurrent text queries share one encoder call;
* `api`        the JSON routes under /api;
* `hosts`      the `Host` check (DNS rebinding): only the bound address, loopback names and --allowed-host;
* `auth`       the token check (bearer header or login session cookie), the login form and logout;
* `sessions`   login sessions: a random id per login, an expiry, revocation; kept server-side for all workers;
* `limits`     connection limits (uvicorn's --max-connections, --keep-alive) and what they do not cover;
* `throttle`   failed bearer tokens and logins per client address (token bucket; 429 with Retry-After);
* `middleware` the request log (method, route, status: no query strings), error guard, security headers;
* `page`       the static pages in `static/` and their Content-Security-Policy;
* `app`        `create_app`, the uvicorn factory, `serve`.
"""
