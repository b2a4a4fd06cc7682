"""The Streamlit entry script of the nanolens explorer: `streamlit run app.py -- --runs runs/`.

`nanolens explore` runs it for you. The pages are in `nanolens.apps.pages`, ordered by
`nanolens.apps.explorer`.
"""

from nanolens.apps.explorer import main

main()
