import subprocess
import sys

import chatstream


def test_all_is_sorted_and_every_name_resolves():
    assert chatstream.__all__ == sorted(chatstream.__all__)
    for name in chatstream.__all__:
        assert getattr(chatstream, name) is not None, name


def test_exported_objects_come_from_chatstream_modules():
    for name in chatstream.__all__:
        value = getattr(chatstream, name)
        if hasattr(value, "__module__") and not isinstance(value, (str, dict)):
            assert value.__module__.startswith("chatstream."), (name, value.__module__)


def test_unknown_name_is_an_attribute_error():
    try:
        chatstream.NoSuchThing  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_does_not_import_torch():
    code = "import sys, chatstream, chatstream.exceptions; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
