"""The README's catalog table is the one the papers/ records produce, and every entry has a record."""
from replicate.catalog import ROOT, TABLE_END, TABLE_START, catalog_table, read_result
from replicate.hydra_setup import available_papers


def test_every_catalog_entry_has_a_record():
    for paper in available_papers():
        assert (ROOT / "papers" / f"{paper}.md").exists(), f"write papers/{paper}.md"


def test_the_readme_table_is_built_from_the_records():
    readme = (ROOT / "README.md").read_text()
    table = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == catalog_table().strip(), "run `python -m replicate.catalog readme`"


def test_recorded_results_have_at_least_five_seeds_where_the_claim_is_statistical():
    for record in sorted((ROOT / "papers").glob("*.md")):
        result = read_result(record)
        for claim in result.get("claims", []):
            if claim["statistic"] != "exact":
                assert len(result["seeds"]) >= 5, f"{record.name}: record a run with ≥ 5 seeds"
