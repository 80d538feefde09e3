class Shop:
    def place_order(self, first, last, street, city, zip_code, phone, email):
        return (first, last, street, city, zip_code, phone, email)
