"""The tester's reference finder: one small package, one kind of reference per test."""

from __future__ import annotations

import textwrap

from woolly_grpc.core._outline import parse_python
from woolly_grpc.core.local.catalog import Catalog, build_catalog
from woolly_grpc.core.local.doctests import (
    docstring_examples,
    doctest_scope,
    examples,
    runs_doctests,
    setup_blocks,
    snippet,
)
from woolly_grpc.core.local.references import Code, Reference, find_references

PACKAGE = {
    "pkg/__init__.py": "from .strutils import slugify\n",
    "pkg/strutils.py": '''
        """Strings."""


        def asciify(text):
            return text


        def slugify(text):
            """Make a slug.

            >>> slugify("A b")
            'a-b'
            """
            return text.lower().replace(" ", "-")


        def bytes2human(n):
            return str(n)


        def untouched(x):
            return x
        ''',
    "pkg/dictutils.py": """
        class OrderedMultiDict(dict):
            def add(self, key, value):
                pass

            def getlist(self, key):
                return []

            def poplast(self):
                return None

            @classmethod
            def fromkeys_multi(cls, keys):
                return cls()


        OMD = OrderedMultiDict


        class Base:
            def shared(self):
                return 1


        class Child(Base):
            pass
        """,
    "pkg/_private.py": "def hidden():\n    pass\n",
}


def catalog() -> Catalog:
    return build_catalog({p: textwrap.dedent(t) for p, t in PACKAGE.items()})


def refs(test: str, path: str = "tests/test_x.py") -> dict[str, Reference]:
    found = find_references(catalog(), [Code(path, parse_python(textwrap.dedent(test)))])
    return {qualname: ref for (_, qualname), ref in found.items()}


def test_the_catalog_keeps_public_names_only_and_follows_aliases() -> None:
    cat = catalog()
    public = {u.qualname for u in cat.public()}
    assert {"asciify", "OrderedMultiDict", "OrderedMultiDict.add", "Child"} <= public
    assert "hidden" not in public  # a private module
    assert [getattr(u, "qualname", u) for u in cat.lookup("pkg.dictutils", "OMD")] == [
        "OrderedMultiDict"
    ]
    assert [getattr(u, "qualname", u) for u in cat.lookup("pkg", "slugify")] == ["slugify"]


def test_direct_calls_and_imports() -> None:
    found = refs("""
        from pkg.strutils import asciify, untouched

        def test_it():
            assert asciify("x") == "x"
        """)
    assert found["asciify"] == Reference("tests/test_x.py", 5, "calls `asciify`")
    assert found["untouched"].weak and found["untouched"].how == "imported"


def test_attribute_access_through_imported_modules_and_aliases() -> None:
    found = refs("""
        from pkg import strutils
        import pkg.strutils as su
        import pkg

        def test_it():
            strutils.asciify("x")
            su.bytes2human(3)
            pkg.slugify("a")
        """)
    assert found["asciify"].line == 7 and found["asciify"].how == "calls `strutils.asciify`"
    assert found["bytes2human"].how == "calls `su.bytes2human`"
    assert found["slugify"].how == "calls `pkg.slugify`"  # re-exported by the package
    assert "untouched" not in found


def test_a_function_assigned_to_a_local_name() -> None:
    found = refs("""
        from pkg import strutils

        b2h = strutils.bytes2human

        def test_it():
            assert b2h(1) == "1"
        """)
    assert found["bytes2human"].line == 4  # the first reference is the assignment


def test_methods_through_instances() -> None:
    found = refs("""
        from pkg.dictutils import OMD, Child, OrderedMultiDict

        def test_add():
            omd = OMD()
            omd.add(1, 2)

        def test_with():
            with OrderedMultiDict.fromkeys_multi([1]) as other:
                other.getlist(1)

        def test_inherited():
            Child().shared()
        """)
    assert found["OrderedMultiDict.add"].how == "calls `omd.add`"
    assert found["OrderedMultiDict.getlist"].line == 10
    assert found["Base.shared"].how == "calls `Child().shared`"
    assert found["Base"].line == 13  # a method called counts for its class
    assert "OrderedMultiDict.poplast" not in found


def test_fixtures_and_mixins_across_files() -> None:
    mixin = """
        class Mixin:
            def test_pop(self):
                self.Cache().poplast()
        """
    concrete = """
        import pytest
        from pkg.dictutils import OrderedMultiDict

        class TestOMD(Mixin):
            Cache = OrderedMultiDict

        @pytest.fixture
        def made():
            return OrderedMultiDict()

        def test_fixture(made):
            made.getlist(1)
        """
    pieces = [
        Code("tests/__init__.py", parse_python(textwrap.dedent(mixin))),
        Code("tests/test_omd.py", parse_python(textwrap.dedent(concrete))),
    ]
    found = {q: r for (_, q), r in find_references(catalog(), pieces).items()}
    assert found["OrderedMultiDict.poplast"] == Reference(
        "tests/__init__.py", 4, "calls `self.Cache().poplast`"
    )
    assert found["OrderedMultiDict.getlist"].path == "tests/test_omd.py"


def test_parametrize_tables_of_objects_and_of_names() -> None:
    found = refs("""
        import pytest
        from pkg import strutils

        @pytest.mark.parametrize("func", [strutils.asciify, strutils.bytes2human])
        def test_objects(func):
            func("x")

        @pytest.mark.parametrize("name", ["untouched"])
        def test_names(name):
            getattr(strutils, name)(1)
        """)
    assert found["asciify"].line == 5 and found["bytes2human"].line == 5
    assert found["untouched"].how == '"untouched" in a parametrize table'


def test_helpers_called_with_a_class() -> None:
    found = refs("""
        from pkg.dictutils import OrderedMultiDict

        def check(kind):
            kind().poplast()

        def test_it():
            check(OrderedMultiDict)
        """)
    assert found["OrderedMultiDict.poplast"].line == 5


def test_test_names_count_in_a_file_about_the_module() -> None:
    found = refs(
        """
        def test_untouched_keeps_its_input():
            pass

        class AsciifyTests:
            pass
        """,
        path="tests/test_strutils.py",
    )
    assert found["untouched"] == Reference(
        "tests/test_strutils.py", 2, "test named `test_untouched_keeps_its_input`", weak=True
    )
    assert found["asciify"].how == "test named `AsciifyTests`"
    assert refs("def test_untouched():\n    pass\n", path="tests/test_other.py") == {}
    # importing the package says too little about what `test_slugify` is about
    assert "slugify" not in refs("import pkg\n\ndef test_slugify():\n    pass\n")
    assert "asciify" in refs("from pkg import strutils\n\ndef test_asciify_more():\n    pass\n")


def test_unknown_receivers_match_methods_of_classes_the_file_uses() -> None:
    found = refs("""
        from pkg.dictutils import OrderedMultiDict

        def test_it(made=None):
            OrderedMultiDict()
            made.getlist(1)
            made.items()
        """)
    assert found["OrderedMultiDict.getlist"].how.startswith("`.getlist` on what is likely")
    assert "OrderedMultiDict.items" not in found  # a dict method name says nothing


def test_docstring_examples_run_in_their_module() -> None:
    cat = catalog()
    module = cat.modules["pkg.strutils"]
    found_examples = [e for u in module.units.values() for e in docstring_examples(u.node)]
    assert [(e.line, e.source, e.want) for e in found_examples] == [(12, 'slugify("A b")', "'a-b'")]
    code = Code(module.path, snippet([(e.line, e.source) for e in found_examples]), "pkg.strutils")
    found = {q: r for (_, q), r in find_references(cat, [code]).items()}
    assert found["slugify"] == Reference("pkg/strutils.py", 12, "doctest, calls `slugify`")


def test_document_examples_use_their_testsetup() -> None:
    text = textwrap.dedent("""
        Title
        =====

        .. testsetup:: *

           from pkg.strutils import asciify

        Some prose.

           >>> asciify("é")
           'é'
        """)
    pieces = setup_blocks(text) + [(e.line, e.source) for e in examples(text)]
    found = find_references(catalog(), [Code("docs/index.rst", snippet(pieces))])
    assert found[("pkg.strutils", "asciify")].line == 11


def test_whether_doctests_run_comes_from_the_configuration() -> None:
    assert runs_doctests(["[pytest]\naddopts = --doctest-modules"]) == (True, False)
    assert runs_doctests(["suite.addTests(DocTestSuite(more))"]) == (True, False)
    assert runs_doctests(['extensions = ["sphinx.ext.doctest"]']) == (False, True)
    assert runs_doctests(["[tool.pytest.ini_options]\n"]) == (False, False)
    modules = ["pkg", "pkg.strutils", "pkg.dictutils"]
    assert doctest_scope(["addopts = --doctest-modules"], modules) == modules
    assert doctest_scope(["DocTestSuite('pkg.strutils')"], modules) == ["pkg.strutils"]
    assert doctest_scope(["doctest.testmod(pkg)"], modules) == ["pkg"]
