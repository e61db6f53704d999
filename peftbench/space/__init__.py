"""The design space (He et al., ICLR 2022, Table 1): what a method is and how it enters a model.

`spec` holds the typed spec (functional form, insertion form, modified representation, composition) of which every
named method is a preset (`presets`, the YAML files of ``conf/method/``); `modules`, `prefix`, `prompts` and
`verbalizer` are the building blocks; `arch` maps each architecture's attribute paths; `inject` puts a spec into a
transformers model (``apply_method``). Nothing here knows about training, data or records.
"""
