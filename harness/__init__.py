from harness.common import seeds as _seeds

_seeds.register()  # before any entry point composes conf/: model presets name their seed variants with it
