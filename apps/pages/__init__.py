"""The explorer's pages, one module each, each with `render(ctx)`; `nanolens.apps.explorer` orders them."""
