from django.apps import AppConfig


class AvatarSessionsConfig(AppConfig):
    # `sessions` is django.contrib.sessions' label; ours must differ, and labels are baked
    # into migrations, so this is fixed from the first one.
    name = "sessions"
    label = "avatar_sessions"
    verbose_name = "Avatar sessions"
