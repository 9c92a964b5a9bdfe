"""The configs that workloads accept, one module per kind (`config.prep`, `config.train`, `config.tune`,
`config.serve`) on `config.base`.

Light imports only (pydantic): the operator imports these models to build its resource specs and the
workload configs, so a spec field and the workload option it sets are one definition. Nothing is imported
here, so a workload loads only its own kind's models.
"""
