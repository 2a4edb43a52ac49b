"""The web dashboard and its JSON API (`shelfrank serve --http-port`, issue 18)."""
