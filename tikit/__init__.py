"""The Tikit platform as a Pulumi program: settings, regions, tiers and config text."""
