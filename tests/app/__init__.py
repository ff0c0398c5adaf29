"""Tests of the HTTP control server (app/)."""
