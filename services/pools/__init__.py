"""User pools and bulk distribution of a book's codes to them."""
