"""The delivery pipeline: external channels (Web Push now) sent by workers, with retries."""
