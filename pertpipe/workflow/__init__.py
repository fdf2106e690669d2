"""The run, planned: :mod:`.plan` turns the config into what the Snakemake rules name (the top floor: it may use every
package below it; nothing below imports it)."""
