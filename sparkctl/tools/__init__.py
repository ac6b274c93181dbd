"""Operator tools built on the layers below: install/uninstall, doctor, images, pull and the demo."""
