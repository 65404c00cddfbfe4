from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create the 'demo' user if absent (printing its password once) and print its API token."

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(username="demo").first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = users.objects.create_user("demo", password=password)
            self.stdout.write(f"Created user 'demo' with password: {password}")
        else:
            self.stdout.write("User 'demo' exists (its password was printed when it was created).")
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(f"API token for 'demo': {token.key}")
        self.stdout.write(f"  curl -H 'Authorization: Token {token.key}' ...")
