"""Telephony ingress: Twilio Media Streams (and, later, LiveKit SIP rooms)."""
