"""What the chapters show, built from what they computed: tables, figures and the sentences that read them.

One module per chapter that needs more than a few lines of it, named for the chapter's subject; each function takes
the chapter's results and returns a table, a figure or a ``{glue name: text}`` mapping, so that a notebook keeps
its idea, its parameters and its calls. Presentation only (the cache's fingerprint leaves this package out), in the
book layer: it may read the experiment layer's results, never the other way round.
"""
