from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "systimz.orgs"
    label = "orgs"
    verbose_name = "Organisations"
