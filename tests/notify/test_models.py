"""NotificationChannel: a named driver config that can never hold a secret."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from apps.notify.models import NotificationChannel
from apps.notify.services import notification_channel_create, notification_channel_update

pytestmark = pytest.mark.django_db


def test_channel_is_stored_with_its_driver_options():
    channel = notification_channel_create(
        name="ops-slack",
        driver="slack",
        config={"webhook_url_env": "OPS_SLACK_URL", "channel": "#ops"},
        description="The ops room",
    )
    stored = NotificationChannel.objects.get(name="ops-slack")
    assert (stored.driver, stored.config, stored.is_active) == ("slack", {"webhook_url_env": "OPS_SLACK_URL", "channel": "#ops"}, True)
    assert str(channel) == "ops-slack (slack)"


def test_inline_secret_is_refused_and_nothing_is_stored():
    with pytest.raises(ValidationError) as caught:
        notification_channel_create(
            name="ops-slack", driver="slack", config={"webhook_url": "https://hooks.slack.com/services/s3cr3t"}
        )
    assert caught.value.message_dict == {
        "config": [
            "webhook_url is a secret and must not be written in the definition: "
            "put it in an environment variable and name it with webhook_url_env"
        ]
    }
    assert not NotificationChannel.objects.exists()


def test_saving_directly_also_refuses_an_inline_secret():
    with pytest.raises(ValidationError):
        NotificationChannel(name="pd", driver="pagerduty", config={"routing_key": "R0UT1NGk3y"}).save()
    with pytest.raises(ValidationError):
        NotificationChannel.objects.create(name="pd", driver="pagerduty", config={"routing_key": "R0UT1NGk3y"})
    assert not NotificationChannel.objects.exists()


def test_unknown_driver_is_refused():
    with pytest.raises(ValidationError) as caught:
        notification_channel_create(name="birds", driver="pigeon")
    assert caught.value.message_dict == {"driver": ["unknown driver: pigeon"]}


def test_options_are_checked_by_the_driver():
    with pytest.raises(ValidationError) as caught:
        notification_channel_create(name="mail", driver="email", config={"to": ["bob"], "colour": "red"})
    assert caught.value.message_dict == {
        "config": ["unknown option for driver email: colour", "to has an invalid email address: bob"]
    }


def test_name_must_be_a_slug():
    with pytest.raises(ValidationError) as caught:
        notification_channel_create(name="ops slack!", driver="console")
    assert list(caught.value.message_dict) == ["name"]


def test_name_is_unique():
    notification_channel_create(name="ops", driver="console")
    with pytest.raises(ValidationError):
        notification_channel_create(name="ops", driver="console")


def test_database_refuses_an_empty_driver():
    with pytest.raises(IntegrityError):
        # Bypassing save() the way a bulk insert would.
        NotificationChannel.objects.bulk_create([NotificationChannel(name="x", driver="")])


def test_update_is_validated_like_create():
    channel = notification_channel_create(name="hook", driver="webhook", config={"url_env": "OPS_HOOK"})
    with pytest.raises(ValidationError):
        notification_channel_update(channel=channel, config={"url": "https://example.com/s3cr3t"})
    channel.refresh_from_db()
    assert channel.config == {"url_env": "OPS_HOOK"}
    notification_channel_update(channel=channel, is_active=False, description="retired")
    channel.refresh_from_db()
    assert (channel.is_active, channel.description) == (False, "retired")


def test_admin_form_refuses_an_inline_secret(admin_client):
    response = admin_client.post(
        "/admin/notify/notificationchannel/add/",
        {
            "name": "ops-slack",
            "driver": "slack",
            "config": '{"webhook_url": "https://hooks.slack.com/services/s3cr3t"}',
            "is_active": "on",
            "description": "",
        },
    )
    assert response.status_code == 200  # the form again, with its errors
    assert "webhook_url is a secret" in response.content.decode()
    assert not NotificationChannel.objects.exists()
