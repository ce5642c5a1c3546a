"""The live console (`ng911 console`): a web page beside a running chain that draws every hop
in its transport's colour, animates messages as they cross, lets a user place a call from a
map of the boroughs and answer it at a call taker's position. Served on localhost by the
project's own HTTP/1.1 server (`ng911.net.http1`; the event stream is a `StreamResponse`);
the page is static files shipped in the package (no CDN, works offline)."""
