"""The demo app: a guest on the platform that plugs its judge in through the judge registry."""

from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"
    verbose_name = "Demo (invented world, judge and tiny models)"

    def ready(self) -> None:
        """Register the world's rule-based judge as "demo"."""
        from inference.judges import register_judge

        register_judge("demo", "demo.world:JUDGE")
