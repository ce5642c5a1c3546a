"""The live console (`ng911 console`): a web page beside a running chain that draws every hop
in its transport's colour, animates messages as they cross, lets a user place a call from a
map of the boroughs and answer it at a call taker's position. Served by aiohttp on
localhost; the page is static files shipped in the package (no CDN, works offline)."""
